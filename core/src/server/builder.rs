//! [`ServerBuilder`]: a connection's configuration, and the [`WhenFull`]
//! policy.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use super::connection::{Connection, Idle};
use super::handlers::{HandlerTable, WakeQueue, WakeState};
use super::{
    Server, Service, Shutdown, Spawn, DEFAULT_BACKLOG, DEFAULT_MAX_CONCURRENT, WRITE_MARK,
};
use crate::deadline::Deadlines;

use crate::cobs::FramingStats;
use crate::framing::{FrameReader, FrameWriter, Framed, Framing, DEFAULT_MAX_FRAME};
use crate::io::Transport;
use crate::readiness::ReadReadiness;
use crate::sync::Mutex;
use crate::timer::{NoTimer, Timer};

/// What the server does with a request that arrives while
/// [`max_concurrent`](ServerBuilder::max_concurrent) handlers are running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Keep reading: cancels and reserved frame kinds are handled at once,
    /// requests wait in a FIFO backlog bounded in bytes
    /// ([`ServerBuilder::backlog`]) and start in order as handlers finish. A
    /// cancel removes a waiting request (no handler, no reply); one whose
    /// deadline passes is answered
    /// [`RemoteError::DeadlineExceeded`](crate::RemoteError::DeadlineExceeded)
    /// without running. While the backlog is full the server reads nothing
    /// more, so the pressure reaches the client through the transport.
    #[default]
    Queue,
    /// Answer [`RemoteError::Overloaded`](crate::RemoteError::Overloaded) at
    /// once, and keep reading.
    Reject,
}

/// Configures and builds a server for one connection. Cloneable, so one
/// builder can serve as the template for every connection of a listener.
#[derive(Clone)]
#[must_use]
pub struct ServerBuilder<Tm = NoTimer> {
    max_concurrent: usize,
    max_frame: usize,
    timer: Tm,
    spawner: Option<Arc<dyn Spawn>>,
    shutdown: Option<Shutdown>,
    idle_timeout: Option<Duration>,
    when_full: WhenFull,
    backlog: Option<usize>,
    write_mark: Option<usize>,
    stream_credit: u32,
    peer: Option<Arc<str>>,
    framing: Framing,
}

impl<Tm: core::fmt::Debug> core::fmt::Debug for ServerBuilder<Tm> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("max_concurrent", &self.max_concurrent)
            .field("max_frame", &self.max_frame)
            .field("timer", &self.timer)
            .field("spawner", &self.spawner.is_some())
            .field("shutdown", &self.shutdown)
            .field("idle_timeout", &self.idle_timeout)
            .field("when_full", &self.when_full)
            .field("backlog", &self.backlog_bytes())
            .field("write_mark", &self.write_mark_bytes())
            .field("framing", &self.framing)
            .finish()
    }
}

impl ServerBuilder<NoTimer> {
    /// Defaults: [`DEFAULT_MAX_CONCURRENT`] requests, [`DEFAULT_MAX_FRAME`]
    /// bytes per frame, [`WhenFull::Queue`] with a backlog of
    /// `max(DEFAULT_BACKLOG, max_frame)` bytes, handlers run inside the
    /// driver, no deadline checks, no idle timeout.
    pub fn new() -> Self {
        ServerBuilder {
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_frame: DEFAULT_MAX_FRAME,
            timer: NoTimer,
            spawner: None,
            shutdown: None,
            idle_timeout: None,
            when_full: WhenFull::Queue,
            backlog: None,
            write_mark: None,
            stream_credit: crate::client::DEFAULT_CREDIT,
            peer: None,
            framing: Framing::LengthPrefix,
        }
    }
}

impl Default for ServerBuilder<NoTimer> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Tm> ServerBuilder<Tm> {
    fn backlog_bytes(&self) -> usize {
        self.backlog
            .unwrap_or_else(|| DEFAULT_BACKLOG.max(self.max_frame))
    }

    fn write_mark_bytes(&self) -> usize {
        self.write_mark
            .unwrap_or_else(|| WRITE_MARK.max(self.max_frame))
    }
}

impl<Tm: Timer> ServerBuilder<Tm> {
    /// At most `n` requests of one connection run at once (at least 1).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n.max(1);
        self
    }

    /// The largest frame accepted or sent, in bytes (header and body; at
    /// most `u32::MAX`, the most a length prefix can announce).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.min(u32::MAX as usize);
        self
    }

    /// What to do with requests that arrive while the handler table is
    /// full; see [`WhenFull`].
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// With [`WhenFull::Queue`]: at most `bytes` of requests (header and
    /// body of each frame) wait for a free handler slot. A request that
    /// would go past it stays unread — and with it everything the client
    /// sent after it — until a waiting request starts; a request larger
    /// than the whole backlog is still taken when the backlog is empty.
    /// `0` takes one request at a time. Default: `max(DEFAULT_BACKLOG,
    /// max_frame)`.
    pub fn backlog(mut self, bytes: usize) -> Self {
        self.backlog = Some(bytes);
        self
    }

    /// The high-water mark of unsent replies: the driver stops reading
    /// requests while more than `bytes` of encoded replies (and stream
    /// items) wait to be written, and a streaming handler waits for room
    /// under it. Default: `max(WRITE_MARK, max_frame)` for reading, so that
    /// one largest reply fits, and [`WRITE_MARK`] for items (which need no
    /// such room: one item always goes when there is room).
    ///
    /// A reply is encoded whole before the check, so a connection's unsent
    /// bytes peak at about the mark plus the largest reply (its write
    /// buffer at up to twice that: written bytes stay in front of the
    /// unsent ones until they are as many); with a small
    /// heap, set the mark (and [`max_frame`](Self::max_frame)) to what it
    /// can hold. `0` stops reading whenever anything is unsent. Idle
    /// connections also shrink their write buffer to the mark (at most
    /// `WRITE_MARK`); while streams run, only once it holds over twice
    /// that, since the next turn of items would regrow it.
    pub fn write_mark(mut self, bytes: usize) -> Self {
        self.write_mark = Some(bytes);
        self
    }

    /// The timer that enforces the deadlines requests carry and the idle
    /// timeout.
    pub fn timer<T2: Timer>(self, timer: T2) -> ServerBuilder<T2> {
        ServerBuilder {
            max_concurrent: self.max_concurrent,
            max_frame: self.max_frame,
            timer,
            spawner: self.spawner,
            shutdown: self.shutdown,
            idle_timeout: self.idle_timeout,
            when_full: self.when_full,
            backlog: self.backlog,
            write_mark: self.write_mark,
            stream_credit: self.stream_credit,
            peer: self.peer,
            framing: self.framing,
        }
    }

    /// Names the peer of the connection (its address, for a socket), for
    /// handlers to read in their [`CallContext::peer`](super::CallContext::peer).
    /// courier-net sets it for every connection it accepts.
    pub fn peer(mut self, peer: impl Into<Arc<str>>) -> Self {
        self.peer = Some(peer.into());
        self
    }

    /// How many items a caller may send ahead of a handler that receives
    /// a stream (client-streaming and bidirectional methods): the credit
    /// window of each request stream. At least 1; default
    /// [`DEFAULT_CREDIT`](crate::client::DEFAULT_CREDIT). A slow handler
    /// costs at most this many items of memory per stream.
    pub fn stream_credit(mut self, items: u32) -> Self {
        self.stream_credit = items.max(1);
        self
    }

    /// Closes the connection with
    /// [`DriverError::IdleTimeout`](crate::DriverError::IdleTimeout) once it
    /// has been idle for `timeout`: no complete frame received, no reply bytes
    /// taken by the transport, and no handler running or waiting in the
    /// backlog. The period restarts with each of them, and after the last
    /// handler finishes. A peer that sends a frame byte by byte, or stops
    /// reading its replies, is idle too. Needs a [`timer`](Self::timer):
    /// with [`NoTimer`] it never fires.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Runs each handler as a task on `spawner` instead of inside the driver.
    pub fn spawner(mut self, spawner: impl Spawn + 'static) -> Self {
        self.spawner = Some(Arc::new(spawner));
        self
    }

    /// Lets `shutdown` stop the server gracefully: once it is triggered,
    /// new requests and the backlog are answered with
    /// [`RemoteError::ShuttingDown`](crate::RemoteError::ShuttingDown), calls
    /// in flight run to completion, and then the connection is closed.
    /// [`Shutdown::force`] cuts the calls in flight short (they are answered
    /// `ShuttingDown` too).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// How frames are delimited on the connection:
    /// [`Framing::LengthPrefix`] by default, or [`Framing::Cobs`] for links
    /// that lose or corrupt bytes. The client must use the same. With COBS
    /// a corrupted request is skipped and counted
    /// ([`Server::framing_stats`]) and never answered; its caller's call
    /// times out.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// A server future for one connection. Poll it on any executor.
    pub fn build<T: Transport, S: Service>(self, transport: T, service: S) -> Server<T, S, Tm> {
        let backlog = self.backlog_bytes();
        let write_mark = self.write_mark_bytes();
        let wake = Arc::new(WakeQueue {
            state: Mutex::new(WakeState {
                ready: Vec::new(),
                done: Vec::new(),
                driver: None,
            }),
        });
        let mut deadlines = Deadlines::new(self.timer);
        let idle = self.idle_timeout.map(|timeout| {
            let since = deadlines.now();
            deadlines.arm(since.saturating_add(timeout));
            Idle {
                timeout,
                since,
                active: false,
            }
        });
        let mut handlers = HandlerTable::new(wake);
        // Items wait for room under the mark set, else under WRITE_MARK:
        // the default read mark grows with max_frame so that one largest
        // reply fits, which items do not need (one always goes when there
        // is room), and a turn of items filling a max_frame-sized buffer
        // grew and shrank it at every pause.
        handlers.write_mark = self.write_mark.unwrap_or(WRITE_MARK);
        let connection = Connection {
            service,
            writer: FrameWriter::new(self.max_frame),
            deadlines,
            idle,
            max_frame: self.max_frame,
            max_concurrent: self.max_concurrent,
            write_mark,
            when_full: self.when_full,
            backlog,
            stream_credit: self.stream_credit,
            peer: self.peer,
            spawner: self.spawner,
            handlers,
            draining: false,
            forced: false,
        };
        let trace = crate::trace::ConnTrace::server(connection.peer.as_deref());
        let framing_stats = Arc::new(FramingStats::new());
        Server {
            trace,
            io: Framed::new(transport, self.framing, self.max_frame, &framing_stats),
            framing_stats,
            reader: FrameReader::new(self.max_frame),
            readiness: ReadReadiness::new(),
            connection,
            read_closed: false,
            failure: None,
            closing: false,
            finished: false,
            shutdown: self.shutdown.map(|signal| (signal, None)),
        }
    }
}
