//! The `tracing` hooks: a span per call on each side and per connection,
//! and the connection events (documented in the crate docs, "Tracing").
//!
//! Cost model: with the feature off every type here is empty and every
//! method an inline no-op. With it on and nothing listening, each side of
//! a call reads tracing's global level filter (an atomic load) and builds
//! nothing; the span and its clock readings exist (boxed) only when a
//! subscriber enabled the span. Durations need a monotonic clock: with
//! `std` they are measured with `Instant`; without it the spans carry no
//! durations.

#[cfg(feature = "tracing")]
pub(crate) use on::*;

#[cfg(not(feature = "tracing"))]
pub(crate) use off::*;

/// How a call ended, as its span records it.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) enum Outcome<'a> {
    /// Answered; `body` is the reply's postcard body (its first byte tells
    /// a fallible method's `Ok` from its `Err`).
    Answered { body: &'a [u8] },
    /// Failed with a courier error.
    Failed(&'a crate::CallError),
}

#[cfg(feature = "tracing")]
mod on {
    use core::pin::Pin;
    use core::task::{Context, Poll};
    use core::time::Duration;

    use alloc::boxed::Box;
    use tracing::field::{display, Empty};
    use tracing::Span;

    use super::Outcome;
    use crate::client::ConnectionState;
    use crate::server::service::{poll_guarded, Reply, Respond};
    use crate::wire::{Header, MethodKey};
    use crate::MethodInfo;

    #[cfg(feature = "std")]
    type Stamp = std::time::Instant;

    #[cfg(feature = "std")]
    fn now() -> Option<Stamp> {
        Some(std::time::Instant::now())
    }

    #[cfg(not(feature = "std"))]
    #[derive(Clone, Copy)]
    struct Stamp;

    #[cfg(not(feature = "std"))]
    fn now() -> Option<Stamp> {
        None
    }

    /// Microseconds from `from` to `to`, if both were taken.
    fn micros(from: Option<Stamp>, to: Option<Stamp>) -> Option<u64> {
        #[cfg(feature = "std")]
        {
            let d = to?.saturating_duration_since(from?);
            Some(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = (from?, to?);
            None
        }
    }

    /// Whether anyone may listen at `DEBUG`: one relaxed load (and a
    /// constant), checked before a span is built so that a call without a
    /// subscriber touches nothing else.
    #[inline(always)]
    fn debug_on() -> bool {
        use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
        tracing::Level::DEBUG <= STATIC_MAX_LEVEL && tracing::Level::DEBUG <= LevelFilter::current()
    }

    /// A postcard-encoded `Result` starts with its variant index: 1 is `Err`.
    fn is_app_error(info: Option<&MethodInfo>, body: &[u8]) -> bool {
        info.is_some_and(|info| info.fallible) && body.first() == Some(&1)
    }

    fn names(info: Option<&MethodInfo>) -> (&'static str, &'static str) {
        info.map_or(("", ""), |info| (info.service, info.name))
    }

    /// A client call's span: from its first poll to its end. Two words in
    /// the call; the span and its clock readings are boxed only when a
    /// subscriber enabled the span.
    pub(crate) struct CallTrace {
        info: Option<&'static MethodInfo>,
        live: Option<Box<LiveCall>>,
    }

    struct LiveCall {
        span: Span,
        first: Option<Stamp>,
        sent: Option<Stamp>,
    }

    impl CallTrace {
        pub(crate) fn new() -> Self {
            CallTrace {
                info: None,
                live: None,
            }
        }

        pub(crate) fn set_info(&mut self, info: &'static MethodInfo) {
            self.info = Some(info);
        }

        /// The call's first poll: opens its span if anyone listens.
        #[inline(always)]
        pub(crate) fn start(&mut self, key: MethodKey) {
            if debug_on() {
                self.open(key);
            }
        }

        #[cold]
        #[inline(never)]
        fn open(&mut self, key: MethodKey) {
            let (service, method) = names(self.info);
            let span = tracing::debug_span!(
                target: "courier::client",
                "call",
                service,
                method,
                key = key.0,
                id = Empty,
                outcome = Empty,
                error = Empty,
                wait_us = Empty,
                round_trip_us = Empty,
            );
            if !span.is_disabled() {
                self.live = Some(Box::new(LiveCall {
                    span,
                    first: now(),
                    sent: None,
                }));
            }
        }

        /// The request (id `id`) is queued for the transport.
        #[inline(always)]
        pub(crate) fn sent(&mut self, id: u32) {
            if let Some(live) = &mut self.live {
                live.sent = now();
                live.span.record("id", id);
            }
        }

        /// The call ended: records the outcome and the durations, and
        /// closes the span.
        #[inline(always)]
        pub(crate) fn end(&mut self, outcome: Outcome<'_>) {
            if let Some(live) = self.live.take() {
                close(*live, self.info, outcome);
            }
        }

        /// The call was dropped before it ended.
        #[inline(always)]
        pub(crate) fn cancel(&mut self) {
            if let Some(live) = self.live.take() {
                live.span.record("outcome", "cancelled");
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn close(live: LiveCall, info: Option<&MethodInfo>, outcome: Outcome<'_>) {
        let end = now();
        let span = live.span;
        match outcome {
            Outcome::Answered { body } if is_app_error(info, body) => {
                span.record("outcome", "app_error");
            }
            Outcome::Answered { .. } => {
                span.record("outcome", "ok");
            }
            Outcome::Failed(error) => {
                span.record("outcome", "error");
                span.record("error", display(error));
            }
        }
        match live.sent {
            Some(_) => {
                span.record("wait_us", micros(live.first, live.sent));
                span.record("round_trip_us", micros(live.sent, end));
            }
            None => {
                span.record("wait_us", micros(live.first, end));
            }
        }
    }

    /// Wraps a server handler in its call's span if anyone listens; the
    /// span is entered while the handler is polled, so the handler's own
    /// events nest under it.
    #[inline(always)]
    pub(crate) fn serve(
        respond: Pin<Box<dyn Respond + Send>>,
        info: impl FnOnce() -> Option<&'static MethodInfo>,
        key: MethodKey,
        id: u32,
    ) -> Pin<Box<dyn Respond + Send>> {
        if !debug_on() {
            return respond;
        }
        serve_traced(respond, info, key, id)
    }

    #[cold]
    #[inline(never)]
    fn serve_traced(
        respond: Pin<Box<dyn Respond + Send>>,
        info: impl FnOnce() -> Option<&'static MethodInfo>,
        key: MethodKey,
        id: u32,
    ) -> Pin<Box<dyn Respond + Send>> {
        let span = tracing::debug_span!(
            target: "courier::server",
            "serve",
            service = Empty,
            method = Empty,
            key = key.0,
            id,
            outcome = Empty,
            error = Empty,
            queued_us = Empty,
            handler_us = Empty,
        );
        if span.is_disabled() {
            return respond;
        }
        let info = info();
        if let Some(info) = info {
            span.record("service", info.service);
            span.record("method", info.name);
        }
        Box::pin(Traced {
            inner: respond,
            span,
            fallible: info.is_some_and(|info| info.fallible),
            arrived: now(),
            started: None,
            done: false,
        })
    }

    /// A request the server answered with an error without running a
    /// handler (unknown method, bad arguments, overload, shutdown, ...).
    #[inline]
    pub(crate) fn refused(key: MethodKey, id: u32, error: crate::RemoteError) {
        tracing::debug!(
            target: "courier::server",
            key = key.0,
            id,
            error = %error,
            "request refused"
        );
    }

    struct Traced {
        inner: Pin<Box<dyn Respond + Send>>,
        span: Span,
        fallible: bool,
        /// When the request arrived (it may wait in the backlog).
        arrived: Option<Stamp>,
        /// The handler's first poll.
        started: Option<Stamp>,
        done: bool,
    }

    impl Respond for Traced {
        fn poll_respond(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            reply: &mut Reply<'_>,
        ) -> Poll<()> {
            let this = self.get_mut();
            if this.started.is_none() {
                this.started = now();
                this.span
                    .record("queued_us", micros(this.arrived, this.started));
            }
            let from = reply.out.len();
            let poll = {
                let _entered = this.span.enter();
                poll_guarded(this.inner.as_mut(), cx, reply)
            };
            if poll.is_ready() {
                this.done = true;
                this.span.record("handler_us", micros(this.started, now()));
                match last_frame(reply.out.get(from..).unwrap_or_default()) {
                    Some((Header::Error { error, .. }, _)) => {
                        this.span.record("outcome", "error");
                        this.span.record("error", display(error));
                    }
                    Some((_, body)) if this.fallible && body.first() == Some(&1) => {
                        this.span.record("outcome", "app_error");
                    }
                    _ => {
                        this.span.record("outcome", "ok");
                    }
                }
            }
            poll
        }

        fn end_early(self: Pin<&mut Self>, why: crate::CallError) {
            let this = self.get_mut();
            this.done = true;
            if this.started.is_some() {
                this.span.record("handler_us", micros(this.started, now()));
            }
            this.span.record("outcome", "cancelled");
            this.span.record("error", display(why));
        }
    }

    impl Drop for Traced {
        fn drop(&mut self) {
            if !self.done {
                // Cancelled, past its deadline, shut down or disconnected.
                self.span.record("outcome", "cancelled");
            }
        }
    }

    /// A client's connection state changed (see [`ConnectionState`]).
    pub(crate) fn connection_changed(previous: ConnectionState, next: ConnectionState) {
        match (previous, next) {
            (_, ConnectionState::Connected) => {
                tracing::info!(target: "courier::client", "connected");
            }
            (ConnectionState::Connected, ConnectionState::Disconnected { error, .. }) => {
                disconnected(&error);
            }
            (_, ConnectionState::Disconnected { error, .. }) => {
                tracing::info!(target: "courier::client", error = %error, "connect attempt failed");
            }
            (_, ConnectionState::Closed) => {
                tracing::info!(target: "courier::client", "closed");
            }
            (_, ConnectionState::Connecting) => {}
        }
    }

    /// A client's connection ended with `error` (calls in flight fail).
    pub(crate) fn disconnected(error: &crate::CallError) {
        tracing::warn!(target: "courier::client", error = %error, "disconnected");
    }

    /// A reconnecting client dials again after `delay`.
    pub(crate) fn reconnecting(delay: Duration) {
        tracing::info!(
            target: "courier::client",
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "reconnecting"
        );
    }

    /// A server connection's span, entered while its driver is polled, so
    /// that the spans of its calls are its children.
    pub(crate) struct ConnTrace {
        span: Span,
    }

    /// The guard of an entered [`ConnTrace`].
    pub(crate) type Entered = tracing::span::EnteredSpan;

    impl ConnTrace {
        pub(crate) fn server(peer: Option<&str>) -> Self {
            let span = tracing::debug_span!(target: "courier::server", "connection", peer = Empty);
            if let Some(peer) = peer {
                span.record("peer", peer);
            }
            ConnTrace { span }
        }

        /// Enters the span (a clone: the driver stays free to borrow);
        /// a disabled span clones and enters at no cost.
        #[inline]
        pub(crate) fn enter(&self) -> Entered {
            self.span.clone().entered()
        }

        /// The connection ended, with `error` if it failed.
        pub(crate) fn ended(&self, error: Option<&dyn core::fmt::Display>) {
            if self.span.is_disabled() {
                return;
            }
            match error {
                None => {
                    tracing::debug!(target: "courier::server", parent: &self.span, "connection ended")
                }
                Some(error) => tracing::debug!(
                    target: "courier::server",
                    parent: &self.span,
                    error = %error,
                    "connection ended"
                ),
            }
        }
    }

    /// The header and body of the last whole frame in `out`.
    fn last_frame(out: &[u8]) -> Option<(Header, &[u8])> {
        let mut at = 0usize;
        let mut last = None;
        while let Some(prefix) = out.get(at..at.saturating_add(4)) {
            let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            let end = at.saturating_add(4).saturating_add(len);
            let Some(frame) = out.get(at.saturating_add(4)..end) else {
                break;
            };
            last = Some(frame);
            at = end;
        }
        let frame = last?;
        let (header, body_at) = Header::decode(frame).ok()?;
        Some((header, frame.get(body_at..).unwrap_or_default()))
    }
}

#[cfg(not(feature = "tracing"))]
mod off {
    use core::pin::Pin;
    use core::time::Duration;

    use alloc::boxed::Box;

    use super::Outcome;
    use crate::client::ConnectionState;
    use crate::server::service::Respond;
    use crate::wire::MethodKey;
    use crate::MethodInfo;

    /// Empty without the `tracing` feature.
    pub(crate) struct CallTrace;

    impl CallTrace {
        #[inline(always)]
        pub(crate) fn new() -> Self {
            CallTrace
        }
        #[inline(always)]
        pub(crate) fn set_info(&mut self, _: &'static MethodInfo) {}
        #[inline(always)]
        pub(crate) fn start(&mut self, _: MethodKey) {}
        #[inline(always)]
        pub(crate) fn sent(&mut self, _: u32) {}
        #[inline(always)]
        pub(crate) fn end(&mut self, _: Outcome<'_>) {}
        #[inline(always)]
        pub(crate) fn cancel(&mut self) {}
    }

    #[inline(always)]
    pub(crate) fn serve(
        respond: Pin<Box<dyn Respond + Send>>,
        _: impl FnOnce() -> Option<&'static MethodInfo>,
        _: MethodKey,
        _: u32,
    ) -> Pin<Box<dyn Respond + Send>> {
        respond
    }

    #[inline(always)]
    pub(crate) fn refused(_: MethodKey, _: u32, _: crate::RemoteError) {}

    #[inline(always)]
    pub(crate) fn connection_changed(_: ConnectionState, _: ConnectionState) {}

    #[inline(always)]
    pub(crate) fn reconnecting(_: Duration) {}

    #[inline(always)]
    pub(crate) fn disconnected(_: &crate::CallError) {}

    /// Empty without the `tracing` feature.
    pub(crate) struct ConnTrace;

    pub(crate) struct Entered;

    impl ConnTrace {
        #[inline(always)]
        pub(crate) fn server(_: Option<&str>) -> Self {
            ConnTrace
        }
        #[inline(always)]
        pub(crate) fn enter(&self) -> Entered {
            Entered
        }
        #[inline(always)]
        pub(crate) fn ended(&self, _: Option<&dyn core::fmt::Display>) {}
    }
}
