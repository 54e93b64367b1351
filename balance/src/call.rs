//! One balanced unary call: picks an endpoint, sends the arguments, and
//! re-sends them elsewhere when the failure allows (see
//! [`retry`](crate::retry)).

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use courier::{
    Call, CallError, Client, MethodInfo, MethodKey, NotRetried, RemoteError, Timer, Unsent,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::balanced::Balanced;
use crate::load::whole_nanos;
use crate::retry::{classify, Retry};
use crate::state::{Link, Picked};

/// The most attempts a call may make.
pub const MAX_ATTEMPTS: u32 = 16;

/// The endpoints a call tried, inline (a call allocates no list).
#[derive(Default)]
struct Tried {
    ids: [u64; MAX_ATTEMPTS as usize],
    len: usize,
}

impl Tried {
    fn ids(&self) -> &[u64] {
        self.ids.get(..self.len).unwrap_or_default()
    }

    fn push(&mut self, id: u64) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = id;
            self.len += 1;
        }
    }
}

/// Where a call stands. One field for the arguments and the attempt, so
/// that the future stays small and a finished one drops nothing.
enum Stage<Req, Resp> {
    /// Not sent (before the first attempt, between attempts): the
    /// arguments.
    Unsent(Req),
    /// The attempt in flight: it keeps the endpoint's [`Link`] as its
    /// client (one `Arc`), and the arguments (`retain_request`) for a
    /// re-send.
    Sent(Call<'static, Req, Resp>),
    /// Resolved (or its arguments were lost to a panicking `Serialize`).
    Done,
}

/// The connection an attempt went to (always there: the call was made by
/// [`Client::call_held`] with a `Link`).
fn link_of<'c, Req, Resp>(call: &'c Call<'static, Req, Resp>) -> Option<&'c Link> {
    call.holder::<Link>()
}

/// What only a call that failed over or waited needs: boxed, so that the
/// common call's future stays small.
struct Slow<Tm: Timer> {
    /// Endpoints tried, in order (one per attempt).
    tried: Tried,
    /// Whether the next attempt is a retry that costs a budget token.
    budgeted: bool,
    /// The last attempt's error, for when no endpoint is left.
    last: Option<CallError>,
    /// Waiting for an endpoint ends by then.
    wait_until: Option<Duration>,
    sleep: Option<Pin<Box<Tm::Sleep>>>,
}

impl<Tm: Timer> Default for Slow<Tm> {
    fn default() -> Self {
        Slow {
            tried: Tried::default(),
            budgeted: false,
            last: None,
            wait_until: None,
            sleep: None,
        }
    }
}

/// A unary call through a [`Balanced`] channel: resolves to the response,
/// or to why there is none (see [`retry`](crate::retry)).
///
/// Nothing happens until it is first polled; its timeout counts from then
/// and bounds every attempt and the waits between them. Dropping it
/// cancels the attempt in flight.
#[must_use = "a call does nothing unless awaited"]
pub struct BalancedCall<'a, Req, Resp, Tm: Timer> {
    balanced: &'a Balanced<Tm>,
    method: MethodKey,
    /// The timeout until the first poll, the deadline after.
    time: Option<Duration>,
    /// The clock at the attempt's pick, in nanoseconds.
    started: u64,
    stage: Stage<Req, Resp>,
    slow: Option<Box<Slow<Tm>>>,
    idempotent: bool,
    polled: bool,
}

impl<Req, Resp, Tm: Timer> Unpin for BalancedCall<'_, Req, Resp, Tm> {}

impl<'a, Req, Resp, Tm: Timer> BalancedCall<'a, Req, Resp, Tm> {
    pub(crate) fn new(
        balanced: &'a Balanced<Tm>,
        method: &'static MethodInfo,
        request: Req,
        timeout: Option<Duration>,
    ) -> Self {
        BalancedCall {
            balanced,
            method: method.key,
            time: timeout,
            started: 0,
            stage: Stage::Unsent(request),
            slow: None,
            idempotent: method.idempotent,
            polled: false,
        }
    }

    /// Gives the call a timeout, counted from its first poll (no effect
    /// once it was polled).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        if !self.polled {
            self.time = Some(timeout);
        }
        self
    }
}

impl<Req, Resp, Tm> BalancedCall<'_, Req, Resp, Tm>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    Tm: Timer,
{
    fn finish(&mut self, result: Result<Resp, CallError>) -> Poll<Result<Resp, CallError>> {
        self.stage = Stage::Done;
        Poll::Ready(result)
    }

    /// The error when no endpoint is left to re-send to.
    fn exhausted(&self) -> CallError {
        let Some(slow) = self.slow.as_ref() else {
            return CallError::NotSent(Unsent::NoEndpoint);
        };
        match slow.last {
            Some(last) if slow.budgeted => CallError::NotRetried {
                reason: NotRetried::AttemptsExhausted,
                may_have_run: last != CallError::Remote(RemoteError::Overloaded),
            },
            Some(last) => last,
            None => CallError::NotSent(Unsent::NoEndpoint),
        }
    }

    /// Decides after attempt on `endpoint` failed: `None` to re-send.
    fn after_failure(&mut self, endpoint: u64, error: CallError) -> Option<CallError> {
        let max = self.balanced.inner.max_attempts;
        let slow = self.slow.get_or_insert_with(Box::default);
        if slow.tried.ids().is_empty() {
            slow.tried.push(endpoint);
        }
        slow.last = Some(error);
        let retry = classify(error, self.idempotent);
        let budgeted = match retry {
            Retry::No(error) => return Some(error),
            Retry::Free => false,
            Retry::Budgeted { .. } => true,
        };
        let attempts = u32::try_from(slow.tried.ids().len()).unwrap_or(u32::MAX);
        if attempts >= max {
            return Some(match retry {
                Retry::Budgeted { may_have_run } => CallError::NotRetried {
                    reason: NotRetried::AttemptsExhausted,
                    may_have_run,
                },
                _ => error,
            });
        }
        slow.budgeted = budgeted;
        None
    }

    fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<Result<Resp, CallError>> {
        let inner = &*self.balanced.inner;
        let turn = inner.turn();
        // One clock reading serves the deadline and the first pick; without
        // a deadline, the turn's (see `Inner::turn_now`).
        let mut start = None;
        if !self.polled {
            self.polled = true;
            let now = match self.time {
                Some(timeout) => {
                    let now = inner.timer.now();
                    self.time = Some(now.saturating_add(timeout));
                    now
                }
                None => inner.turn_now(turn),
            };
            start = Some(now);
        }
        // Invariant: each turn either polls the attempt in flight (and
        // returns its `Pending`), or picks an endpoint and starts one, or
        // returns after registering for an endpoint (waker in the table,
        // and a sleep for the wait's end).
        loop {
            if let Stage::Sent(call) = &mut self.stage {
                let error = match Pin::new(call).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(response)) => {
                        self.succeeded();
                        return self.finish(Ok(response));
                    }
                    Poll::Ready(Err(error)) => error,
                };
                if let Some(outcome) = self.failed(error) {
                    return self.finish(Err(outcome));
                }
            }
            let now = start.take().unwrap_or_else(|| inner.timer.now());
            if self.time.is_some_and(|at| at <= now) {
                return self.finish(Err(CallError::DeadlineExceeded));
            }
            let key = self.balanced.key;
            let picked = match &self.slow {
                None => inner.with(|s| s.pick_first(now, turn, key, cx.waker())),
                Some(slow) => {
                    let (tried, budgeted) = (slow.tried.ids(), slow.budgeted);
                    inner.with(|s| s.pick(now, turn, key, tried, budgeted, Some(cx.waker())))
                }
            };
            let (link, probe) = match picked {
                Picked::To(link, probe) => (link, probe),
                Picked::Wait => {
                    // Nothing sent, so nothing ends the turn: its clock must
                    // not serve calls after an idle gap.
                    inner.forget_turn_now();
                    return self.wait(cx);
                }
                Picked::NoEndpoint => {
                    inner.forget_turn_now();
                    let error = self.exhausted();
                    return self.finish(Err(error));
                }
                Picked::BudgetExhausted => {
                    inner.forget_turn_now();
                    let last = self.slow.as_ref().and_then(|slow| slow.last);
                    return self.finish(Err(CallError::NotRetried {
                        reason: NotRetried::BudgetExhausted,
                        may_have_run: last != Some(CallError::Remote(RemoteError::Overloaded)),
                    }));
                }
            };
            if probe {
                tracing::info!(
                    target: "courier_balance",
                    instance = link.instance.as_str(),
                    "endpoint probed after its ejection"
                );
            }
            if let Some(slow) = self.slow.as_mut() {
                slow.sleep = None;
                slow.wait_until = None;
                slow.tried.push(link.id);
            }
            let Stage::Unsent(request) = mem::replace(&mut self.stage, Stage::Done) else {
                // Only a panicking `Serialize` loses them (and `failed`
                // ends such a call).
                link.load.ended();
                return self.finish(Err(CallError::Encode));
            };
            let left = self.time.map(|at| at.saturating_sub(now));
            let call = Client::call_held(link, self.method, request)
                .retain_request()
                .with_optional_timeout(left);
            self.stage = Stage::Sent(call);
            self.started = whole_nanos(now);
        }
    }

    /// The attempt in flight succeeded: records its latency on its
    /// endpoint, measured to the driver poll that delivered the reply (no
    /// clock reading of its own), ends the endpoint's failure record if it
    /// has one, and drops the attempt.
    fn succeeded(&mut self) {
        let inner = &*self.balanced.inner;
        if let Some(link) = match &self.stage {
            Stage::Sent(call) => link_of(call),
            _ => None,
        } {
            let load = &*link.load;
            load.ended();
            let end = inner.reply_time(self.started);
            load.latency
                .observe_ns(end.saturating_sub(self.started), end);
            if load.is_failing() {
                inner.with(|s| s.succeeded(link.id));
            }
        }
        self.stage = Stage::Done;
    }

    /// The attempt in flight failed with `error`: records the failure on
    /// its endpoint and takes the arguments back. Returns the call's
    /// outcome, or `None` to re-send.
    #[cold]
    fn failed(&mut self, error: CallError) -> Option<CallError> {
        let inner = &*self.balanced.inner;
        // The link stays alive (in the finished call) until the attempt is
        // dropped below.
        let Stage::Sent(call) = mem::replace(&mut self.stage, Stage::Done) else {
            return Some(error);
        };
        let id = link_of(&call).map_or(0, |link| {
            link.load.ended();
            link.id
        });
        let started = Duration::from_nanos(self.started);
        // The arguments come back for a re-send.
        if let Some(request) = call.into_request() {
            self.stage = Stage::Unsent(request);
        }
        let now = inner.timer.now();
        let rtt = now.saturating_sub(started);
        let failed = inner.with(|s| s.failed(id, now, rtt, error));
        if let Some((instance, Some(until))) = &failed {
            tracing::warn!(
                target: "courier_balance",
                instance = instance.as_str(),
                until = ?until,
                "endpoint ejected after repeated failures"
            );
        }
        let instance = failed.as_ref().map_or("", |(i, _)| i.as_str());
        match self.after_failure(id, error) {
            Some(outcome) => {
                tracing::debug!(
                    target: "courier_balance",
                    instance,
                    %error,
                    %outcome,
                    "call failed, not re-sent"
                );
                Some(outcome)
            }
            // Only a panicking `Serialize` loses the arguments.
            None if matches!(self.stage, Stage::Done) => Some(CallError::Encode),
            None => {
                tracing::debug!(
                    target: "courier_balance",
                    instance,
                    reason = %error,
                    "call re-sent on another endpoint"
                );
                None
            }
        }
    }

    /// Waits for an endpoint (the table holds the waker), at most until the
    /// deadline or the balancer's `max_wait` from the first wait.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<Resp, CallError>> {
        let inner = &*self.balanced.inner;
        let deadline = self.time;
        let slow = self.slow.get_or_insert_with(Box::default);
        // The clock itself: the pick's may be its turn's first reading.
        let until = *slow
            .wait_until
            .get_or_insert_with(|| inner.timer.now().saturating_add(inner.max_wait));
        let until = deadline.map_or(until, |at| at.min(until));
        let sleep = slow
            .sleep
            .get_or_insert_with(|| Box::pin(inner.timer.sleep_until(until)));
        if sleep.as_mut().poll(cx).is_ready() || inner.timer.now() >= until {
            let error = if deadline.is_some_and(|at| at <= until) {
                CallError::DeadlineExceeded
            } else {
                self.exhausted()
            };
            return self.finish(Err(error));
        }
        Poll::Pending
    }
}

impl<Req, Resp, Tm> Future for BalancedCall<'_, Req, Resp, Tm>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    Tm: Timer,
{
    type Output = Result<Resp, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if matches!(this.stage, Stage::Done) {
            return Poll::Ready(Err(CallError::Closed));
        }
        this.poll_call(cx)
    }
}

impl<Req, Resp, Tm: Timer> Drop for BalancedCall<'_, Req, Resp, Tm> {
    fn drop(&mut self) {
        if let Stage::Sent(call) = &self.stage {
            if let Some(link) = link_of(call) {
                link.load.ended();
            }
            // Dropping the stage cancels the attempt (a cancel frame, or
            // taken back unsent).
        }
    }
}
