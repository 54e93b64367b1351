//! Error types. None of them allocates; all have readable `Display` messages.
//!
//! - [`FrameError`]: bytes that are not a valid frame.
//! - [`RemoteError`]: a failure the server reports for one call (sent as an
//!   error frame).
//! - [`CallError`]: what one caller gets when its call fails — a remote error,
//!   a deadline, a closed or failed connection, or a value that could not be
//!   encoded or decoded. Application errors are not here: a method that
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
    /// Any other I/O failure.
    Io,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportErrorKind::Closed => "connection closed",
            TransportErrorKind::Reset => "connection reset",
            TransportErrorKind::TimedOut => "connection timed out",
            TransportErrorKind::Io => "I/O error",
        })
    }
}

/// A transport's own error type.
pub trait TransportError: fmt::Debug + fmt::Display {
    /// The kind reported to callers.
    fn kind(&self) -> TransportErrorKind;
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
            _ => TransportErrorKind::Io,
        }
    }
}

/// Why one call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The server answered with an error.
    Remote(RemoteError),
    /// The call's timeout passed before a reply arrived (checked locally).
    DeadlineExceeded,
    /// The connection failed; the transport's error was of this kind.
    Transport(TransportErrorKind),
    /// The connection was closed: by the peer, or because the driver was
    /// dropped or shut down.
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
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Remote(e) => write!(f, "server error: {e}"),
            CallError::DeadlineExceeded => f.write_str("deadline exceeded"),
            CallError::Transport(k) => write!(f, "transport failed: {k}"),
            CallError::Closed => f.write_str("connection closed"),
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
            DriverError::Transport(e) => CallError::Transport(e.kind()),
            DriverError::Closed => CallError::Closed,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(RemoteError::from_code(code).code(), code);
        }
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
