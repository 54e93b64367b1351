//! Error types. None of them allocates; all have readable `Display` messages.
//!
//! - [`FrameError`]: bytes that are not a valid frame.
//! - [`RemoteError`]: a failure the server reports for one call (sent as an
//!   error frame).
//! - [`CallError`]: what one caller gets when its call fails — a remote error,
//!   a deadline, a lost or failed connection, a request never sent, or a
//!   value that could not be encoded or decoded;
//!   [`CallError::is_retryable`] says whether it certainly did not run on a
//!   server (the table is on [`CallError`]). Application errors are not here: a method that
//!   returns `Result<T, E>` hands its `E` to the caller as `Ok(Err(e))`.
//! - [`DriverError`]: why a client or server driver stopped; it keeps the
//!   transport's own error.
//! - [`TransportError`] / [`TransportErrorKind`]: each transport keeps its own
//!   error type and maps it to a small kind, which is what callers see.

use core::fmt;

/// Bytes that do not form a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix announced a frame over the configured limit.
    TooLarge {
        /// The announced (or, when encoding, the actual) frame length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The frame ended before its header did.
    Truncated,
    /// The peer speaks a protocol version this crate does not.
    UnsupportedVersion(u8),
    /// Flag bits this version does not define were set.
    UnknownFlags(u8),
    /// An output buffer was too small for the header.
    BufferTooSmall,
    /// The stream ended in the middle of a frame.
    UnexpectedEof,
    /// A stream item arrived beyond the credit its receiver granted.
    CreditExceeded,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::Truncated => f.write_str("frame too short for its header"),
            FrameError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            FrameError::UnknownFlags(b) => write!(f, "unknown header flags {b:#04x}"),
            FrameError::BufferTooSmall => f.write_str("output buffer too small for the header"),
            FrameError::UnexpectedEof => f.write_str("stream ended in the middle of a frame"),
            FrameError::CreditExceeded => f.write_str("stream item beyond the granted credit"),
        }
    }
}

/// A failure the server reports for one call; travels as an error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteError {
    /// No method with this key (name or signature differ between the peers).
    UnknownMethod,
    /// The arguments could not be decoded as the method's parameter types.
    BadRequest,
    /// The call's deadline passed on the server; its handler was dropped.
    DeadlineExceeded,
    /// The server refused the call for lack of capacity.
    Overloaded,
    /// The handler panicked; the server keeps serving other calls.
    HandlerPanicked,
    /// The server is shutting down and takes no new calls.
    ShuttingDown,
    /// The response could not be encoded, or was over the frame limit.
    ResponseTooLarge,
    /// The caller closed its write half while this streaming call still
    /// needed credit or items from it: the call cannot go on (PROTOCOL.md
    /// R8).
    StreamAbandoned,
    /// A code this version does not know.
    Other(u8),
}

impl RemoteError {
    /// The code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            RemoteError::UnknownMethod => 1,
            RemoteError::BadRequest => 2,
            RemoteError::DeadlineExceeded => 3,
            RemoteError::Overloaded => 4,
            RemoteError::HandlerPanicked => 5,
            RemoteError::ShuttingDown => 6,
            RemoteError::ResponseTooLarge => 7,
            RemoteError::StreamAbandoned => 8,
            RemoteError::Other(c) => c,
        }
    }

    /// The error for a code on the wire.
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => RemoteError::UnknownMethod,
            2 => RemoteError::BadRequest,
            3 => RemoteError::DeadlineExceeded,
            4 => RemoteError::Overloaded,
            5 => RemoteError::HandlerPanicked,
            6 => RemoteError::ShuttingDown,
            7 => RemoteError::ResponseTooLarge,
            8 => RemoteError::StreamAbandoned,
            c => RemoteError::Other(c),
        }
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::UnknownMethod => {
                f.write_str("unknown method (name or signature differ between client and server)")
            }
            RemoteError::BadRequest => f.write_str("server could not decode the arguments"),
            RemoteError::DeadlineExceeded => f.write_str("deadline exceeded on the server"),
            RemoteError::Overloaded => f.write_str("server overloaded"),
            RemoteError::HandlerPanicked => f.write_str("handler panicked"),
            RemoteError::ShuttingDown => f.write_str("server shutting down"),
            RemoteError::ResponseTooLarge => f.write_str("response too large to send"),
            RemoteError::StreamAbandoned => {
                f.write_str("the caller closed its side while the stream needed it")
            }
            RemoteError::Other(c) => write!(f, "remote error code {c}"),
        }
    }
}

/// The coarse kind of a transport failure, which is what callers see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The peer closed the connection.
    Closed,
    /// The connection was reset or broken.
    Reset,
    /// A read or write timed out.
    TimedOut,
    /// A connection attempt was refused: nothing listens at the address.
    Refused,
    /// A connection attempt found no route to the host or network.
    Unreachable,
    /// Any other I/O failure.
    Io,
}

impl TransportErrorKind {
    /// Whether the peer went away: it closed the connection, or the
    /// connection was reset or broken. Callers of a connection lost this way
    /// see [`CallError::ConnectionLost`], whichever of the two it was.
    pub const fn is_disconnect(self) -> bool {
        matches!(self, TransportErrorKind::Closed | TransportErrorKind::Reset)
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportErrorKind::Closed => "connection closed",
            TransportErrorKind::Reset => "connection reset",
            TransportErrorKind::TimedOut => "connection timed out",
            TransportErrorKind::Refused => "connection refused",
            TransportErrorKind::Unreachable => "host or network unreachable",
            TransportErrorKind::Io => "I/O error",
        })
    }
}

/// A transport's own error type.
pub trait TransportError: fmt::Debug + fmt::Display {
    /// The kind reported to callers.
    fn kind(&self) -> TransportErrorKind;

    /// The operating system's kind of the error, for errors that come from
    /// `std::io`; `None` by default. [`ConnectError::io_kind`] reports it
    /// to callers of a reconnecting client whose connection attempt failed.
    #[cfg(feature = "std")]
    fn io_kind(&self) -> Option<std::io::ErrorKind> {
        None
    }
}

impl TransportError for core::convert::Infallible {
    fn kind(&self) -> TransportErrorKind {
        match *self {}
    }
}

#[cfg(feature = "std")]
impl TransportError for std::io::Error {
    fn kind(&self) -> TransportErrorKind {
        use std::io::ErrorKind as K;
        match std::io::Error::kind(self) {
            K::UnexpectedEof | K::BrokenPipe | K::NotConnected => TransportErrorKind::Closed,
            K::ConnectionReset | K::ConnectionAborted => TransportErrorKind::Reset,
            K::TimedOut => TransportErrorKind::TimedOut,
            K::ConnectionRefused => TransportErrorKind::Refused,
            K::HostUnreachable | K::NetworkUnreachable => TransportErrorKind::Unreachable,
            _ => TransportErrorKind::Io,
        }
    }

    fn io_kind(&self) -> Option<std::io::ErrorKind> {
        Some(std::io::Error::kind(self))
    }
}

/// Why a reconnecting client's connection attempt failed: the transport's
/// [kind](TransportErrorKind) and, under `std`, the operating system's
/// [`std::io::ErrorKind`] when the transport's error carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectError {
    kind: TransportErrorKind,
    #[cfg(feature = "std")]
    io: Option<std::io::ErrorKind>,
}

impl ConnectError {
    /// An attempt that failed with `error`.
    pub fn new<E: TransportError + ?Sized>(error: &E) -> Self {
        ConnectError {
            kind: error.kind(),
            #[cfg(feature = "std")]
            io: error.io_kind(),
        }
    }

    /// An attempt that failed with an error of `kind` (no OS error kind).
    pub const fn from_kind(kind: TransportErrorKind) -> Self {
        ConnectError {
            kind,
            #[cfg(feature = "std")]
            io: None,
        }
    }

    /// The transport's kind of the failure, e.g.
    /// [`TransportErrorKind::Refused`].
    pub const fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// The operating system's kind of the failure, e.g.
    /// [`std::io::ErrorKind::ConnectionRefused`], if the transport's error
    /// came from `std::io`.
    #[cfg(feature = "std")]
    pub const fn io_kind(&self) -> Option<std::io::ErrorKind> {
        self.io
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(feature = "std")]
        if let Some(io) = self.io {
            if self.kind == TransportErrorKind::Io {
                return write!(f, "{io}");
            }
        }
        fmt::Display::fmt(&self.kind, f)
    }
}

/// Why a request was never sent (see [`CallError::NotSent`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unsent {
    /// There was no connection: it was lost (the peer went away, the
    /// transport failed, or the peer broke the protocol) before the request
    /// was handed to it, or it had not been made yet.
    Disconnected,
    /// The client was closed: its driver finished or was dropped.
    Closed,
    /// A channel over many connections (a load balancer) had no endpoint
    /// to send it to: none is known, or every one is down or ejected.
    NoEndpoint,
}

impl fmt::Display for Unsent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsent::Disconnected => "no connection",
            Unsent::Closed => "client closed",
            Unsent::NoEndpoint => "no endpoint available",
        })
    }
}

/// Why one call failed.
///
/// Whether the request may have run on a server is part of the error: the
/// client knows whether a request's bytes may have left the process (see
/// the [client's guarantees](crate::client#guarantees)), and
/// [`is_retryable`](CallError::is_retryable) is true only when they
/// certainly did not, or the server said it did not start the call.
///
/// | variant | may have run on a server | `is_retryable()` |
/// |---|---|---|
/// | [`NotSent`](CallError::NotSent) — no connection, or the client closed, before the request was handed to the transport | no | **true** |
/// | [`Connect`](CallError::Connect) — a reconnecting client's connection attempt failed (refused, unreachable, …) | no | **true** |
/// | [`Remote`](CallError::Remote)`(`[`Overloaded`](RemoteError::Overloaded)`)` — rejected before its handler started | no | **true** |
/// | [`Remote`](CallError::Remote)`(`[`UnknownMethod`](RemoteError::UnknownMethod) / [`BadRequest`](RemoteError::BadRequest)`)` | no, but the same request fails the same way again | false |
/// | [`Remote`](CallError::Remote)`(`[`ShuttingDown`](RemoteError::ShuttingDown)`)` — also sent for calls still running when a shutdown's grace period ended | maybe | false |
/// | [`Remote`](CallError::Remote)`(`any other`)` — deadline on the server, handler panicked, response too large, unknown code | yes | false |
/// | [`ConnectionLost`](CallError::ConnectionLost) — the peer went away (EOF, reset, broken pipe) after the request may have been handed to the transport | maybe | false |
/// | [`Transport`](CallError::Transport) — the connection failed otherwise (timed out, other I/O error) after the request may have been handed to it | maybe | false |
/// | [`Protocol`](CallError::Protocol) — the peer broke the protocol; the connection was dropped | maybe | false |
/// | [`Closed`](CallError::Closed) — the client's driver finished or was dropped after the request may have been handed to the transport | maybe | false |
/// | [`DeadlineExceeded`](CallError::DeadlineExceeded) — the call's own timeout passed (its request may have been sent) | maybe | false |
/// | [`RequestTooLarge`](CallError::RequestTooLarge), [`Encode`](CallError::Encode) | no, but the same request fails the same way again | false |
/// | [`Decode`](CallError::Decode) — the server answered | yes | false |
/// | [`NotRetried`](CallError::NotRetried) — a load balancer did not re-send it after a lost connection (`may_have_run: true`) or an overload (`false`) | as `may_have_run` says | `!may_have_run` |
///
/// A call whose time runs out while a reconnecting client is disconnected
/// (its own timeout, or [`Outage::Wait`](crate::client::Outage::Wait)'s
/// `max_wait`) was never sent, and fails with the outage's error:
/// [`Connect`](CallError::Connect) if the last attempt to connect failed,
/// else [`NotSent`](CallError::NotSent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The server answered with an error.
    Remote(RemoteError),
    /// The call's timeout passed before a reply arrived (checked locally).
    /// Its request may have been sent.
    DeadlineExceeded,
    /// The connection failed, other than by the peer going away (a timeout,
    /// another I/O error), after the request may have been handed to it.
    Transport(TransportErrorKind),
    /// The peer went away — it closed the connection (EOF), or the
    /// connection was reset or broken — after the request may have been
    /// handed to the transport. The server may have run it. Every backend
    /// reports a vanished peer this way, whether the driver noticed it
    /// reading or writing.
    ConnectionLost,
    /// A reconnecting client's attempt to connect failed; the request was
    /// never sent.
    Connect(ConnectError),
    /// The request was never handed to a transport, so no server ran it.
    NotSent(Unsent),
    /// The client's driver finished or was dropped after the request may
    /// have been handed to the transport.
    Closed,
    /// The encoded request was over the frame limit; nothing was sent.
    RequestTooLarge {
        /// The encoded frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The arguments could not be serialized.
    Encode,
    /// The response could not be decoded as the expected type.
    Decode,
    /// The connection was dropped because the peer broke the protocol.
    Protocol(FrameError),
    /// The caller cancelled the call (seen by the callee's side: a
    /// handler's incoming stream or its context).
    Cancelled,
    /// A channel that re-sends failed calls (a load balancer) did not
    /// re-send this one, for `reason`, after an attempt failed in a way
    /// that a retry could have fixed. `may_have_run` says whether that
    /// attempt may have run on a server (its connection was lost after the
    /// request may have reached it); if false, it certainly did not (the
    /// server refused it as [overloaded](RemoteError::Overloaded)).
    NotRetried {
        /// Why it was not re-sent.
        reason: NotRetried,
        /// Whether the failed attempt may have run on a server.
        may_have_run: bool,
    },
}

/// Why a channel that re-sends failed calls did not re-send one (see
/// [`CallError::NotRetried`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotRetried {
    /// The request may have run on a server and its method is not declared
    /// `#[idempotent]`: running it twice could do its effect twice.
    NotIdempotent,
    /// The retry budget had no token: retries are already at the configured
    /// share of calls, and more would amplify an outage.
    BudgetExhausted,
    /// The call used every attempt it was allowed, or no endpoint it had
    /// not tried yet was available.
    AttemptsExhausted,
}

impl fmt::Display for NotRetried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotRetried::NotIdempotent => "the method is not idempotent",
            NotRetried::BudgetExhausted => "the retry budget is exhausted",
            NotRetried::AttemptsExhausted => "every attempt was used",
        })
    }
}

impl CallError {
    /// Whether the call may be retried knowing that it did not run on any
    /// server: its request was never sent ([`NotSent`](CallError::NotSent),
    /// [`Connect`](CallError::Connect)), or the server rejected it before
    /// starting it ([`RemoteError::Overloaded`]). False for every error
    /// after which the server may have run the call, and for failures that
    /// a retry would repeat (encoding, size limits, unknown method). See
    /// the table on [`CallError`].
    ///
    /// An idempotent call may be retried after more errors than these; a
    /// retry loop should also bound its attempts and back off.
    pub const fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::NotSent(_)
                | CallError::Connect(_)
                | CallError::Remote(RemoteError::Overloaded)
                | CallError::NotRetried {
                    may_have_run: false,
                    ..
                }
        )
    }

    /// The error for a call whose request never left the process, when the
    /// connection ended (or the client closed) with `self`.
    #[cfg(feature = "alloc")]
    pub(crate) const fn not_sent(self) -> CallError {
        match self {
            CallError::ConnectionLost | CallError::Transport(_) | CallError::Protocol(_) => {
                CallError::NotSent(Unsent::Disconnected)
            }
            CallError::Closed => CallError::NotSent(Unsent::Closed),
            other => other,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Remote(e) => write!(f, "server error: {e}"),
            CallError::DeadlineExceeded => f.write_str("deadline exceeded"),
            CallError::Transport(k) => write!(f, "transport failed: {k}"),
            CallError::ConnectionLost => {
                f.write_str("connection lost while the request may have been on the server")
            }
            CallError::Connect(e) => write!(f, "could not connect: {e}"),
            CallError::NotSent(why) => write!(f, "request not sent: {why}"),
            CallError::Closed => f.write_str("client closed"),
            CallError::RequestTooLarge { len, max } => {
                write!(
                    f,
                    "request of {len} bytes exceeds the frame limit of {max} bytes"
                )
            }
            CallError::Encode => f.write_str("could not serialize the arguments"),
            CallError::Decode => f.write_str("could not decode the response"),
            CallError::Protocol(e) => write!(f, "protocol error: {e}"),
            CallError::Cancelled => f.write_str("the caller cancelled the call"),
            CallError::NotRetried {
                reason,
                may_have_run: true,
            } => write!(
                f,
                "not retried ({reason}) after the connection was lost while the request may have been on the server"
            ),
            CallError::NotRetried {
                reason,
                may_have_run: false,
            } => write!(f, "not retried ({reason}) after the server refused the call as overloaded"),
        }
    }
}

/// Why a client or server driver stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum DriverError<E> {
    /// The transport failed.
    Transport(E),
    /// The peer closed the connection while calls were in flight (client) or
    /// in the middle of a frame (both).
    Closed,
    /// The peer sent bytes that are not a valid frame.
    Protocol(FrameError),
    /// The server closed a connection that was idle for longer than its
    /// [idle timeout](crate::ServerBuilder::idle_timeout): no complete frame
    /// arrived, no reply was sent and no handler was running.
    IdleTimeout,
}

impl<E: TransportError> DriverError<E> {
    /// What callers of the failed connection are told.
    pub fn to_call_error(&self) -> CallError {
        match self {
            DriverError::Transport(e) if e.kind().is_disconnect() => CallError::ConnectionLost,
            DriverError::Transport(e) => CallError::Transport(e.kind()),
            DriverError::Closed => CallError::ConnectionLost,
            DriverError::Protocol(e) => CallError::Protocol(*e),
            DriverError::IdleTimeout => CallError::Transport(TransportErrorKind::TimedOut),
        }
    }
}

impl<E: fmt::Display> fmt::Display for DriverError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Transport(e) => write!(f, "transport error: {e}"),
            DriverError::Closed => f.write_str("connection closed by the peer"),
            DriverError::Protocol(e) => write!(f, "protocol error: {e}"),
            DriverError::IdleTimeout => {
                f.write_str("connection idle for longer than the idle timeout")
            }
        }
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + 'static> std::error::Error for DriverError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriverError::Transport(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FrameError {}
#[cfg(feature = "std")]
impl std::error::Error for RemoteError {}
#[cfg(feature = "std")]
impl std::error::Error for CallError {}
#[cfg(feature = "std")]
impl std::error::Error for ConnectError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(RemoteError::from_code(code).code(), code);
        }
    }

    /// The table on `CallError`, row by row.
    #[test]
    fn retryable_only_when_the_call_certainly_did_not_run() {
        let refused = ConnectError::from_kind(TransportErrorKind::Refused);
        let retryable = [
            CallError::NotSent(Unsent::Disconnected),
            CallError::NotSent(Unsent::Closed),
            CallError::Connect(refused),
            CallError::Remote(RemoteError::Overloaded),
        ];
        let not = [
            CallError::Remote(RemoteError::UnknownMethod),
            CallError::Remote(RemoteError::BadRequest),
            CallError::Remote(RemoteError::DeadlineExceeded),
            CallError::Remote(RemoteError::HandlerPanicked),
            CallError::Remote(RemoteError::ShuttingDown),
            CallError::Remote(RemoteError::ResponseTooLarge),
            CallError::Remote(RemoteError::Other(9)),
            CallError::DeadlineExceeded,
            CallError::Transport(TransportErrorKind::TimedOut),
            CallError::ConnectionLost,
            CallError::Closed,
            CallError::RequestTooLarge { len: 2, max: 1 },
            CallError::Encode,
            CallError::Decode,
            CallError::Protocol(FrameError::Truncated),
        ];
        assert!(retryable.iter().all(CallError::is_retryable));
        assert!(!not.iter().any(CallError::is_retryable));
    }

    /// Errors that end a connection become, for calls that never left,
    /// their not-sent form; the others stay.
    #[cfg(feature = "alloc")]
    #[test]
    fn not_sent_forms() {
        let lost = [
            CallError::ConnectionLost,
            CallError::Transport(TransportErrorKind::Io),
            CallError::Protocol(FrameError::UnexpectedEof),
        ];
        for e in lost {
            assert_eq!(e.not_sent(), CallError::NotSent(Unsent::Disconnected));
        }
        assert_eq!(
            CallError::Closed.not_sent(),
            CallError::NotSent(Unsent::Closed)
        );
        let refused = CallError::Connect(ConnectError::from_kind(TransportErrorKind::Refused));
        assert_eq!(refused.not_sent(), refused);
    }

    #[cfg(feature = "std")]
    #[test]
    fn io_errors_keep_their_kind() {
        let e = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let c = ConnectError::new(&e);
        assert_eq!(c.kind(), TransportErrorKind::Refused);
        assert_eq!(c.io_kind(), Some(std::io::ErrorKind::ConnectionRefused));
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let c = ConnectError::new(&e);
        assert_eq!(c.kind(), TransportErrorKind::Io);
        assert_eq!(c.io_kind(), Some(std::io::ErrorKind::PermissionDenied));
        extern crate std;
        use std::string::ToString;
        assert!(CallError::Connect(c)
            .to_string()
            .contains("permission denied"));
    }

    #[test]
    fn messages_name_sizes() {
        extern crate std;
        use std::string::ToString;
        let msg = FrameError::TooLarge {
            len: 5000,
            max: 4096,
        }
        .to_string();
        assert!(msg.contains("5000") && msg.contains("4096"), "{msg}");
    }
}
