//! Which failures a balanced call re-sends on another endpoint.
//!
//! | failure | may have run | re-sent | costs a budget token |
//! |---|---|---|---|
//! | [`NotSent`](CallError::NotSent) (no connection, client closed), [`Connect`](CallError::Connect) | no | always | no |
//! | [`Remote(Overloaded)`](courier::RemoteError::Overloaded) | no | always | yes |
//! | [`ConnectionLost`](CallError::ConnectionLost), [`Transport`](CallError::Transport), [`Protocol`](CallError::Protocol), [`Closed`](CallError::Closed), [`Remote(ShuttingDown)`](courier::RemoteError::ShuttingDown) | maybe | if the method is `#[idempotent]` | yes |
//! | anything else (the server answered, a deadline, encoding, sizes) | — | never | — |
//!
//! A failure that would be re-sent but is not — its method is not
//! idempotent, the budget is out, or the call used its attempts — reaches
//! the caller as [`CallError::NotRetried`] with the reason; one whose
//! deadline passed, as [`CallError::DeadlineExceeded`]. A call re-sent for
//! never having been sent, with no endpoint left to try, gets that error
//! itself (it is [retryable](CallError::is_retryable)).

use courier::{CallError, NotRetried, RemoteError, Unsent};

/// What to do after an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Re-send; it certainly did not run, and costs no server anything.
    Free,
    /// Re-send if the budget has a token.
    Budgeted {
        /// Whether the failed attempt may have run.
        may_have_run: bool,
    },
    /// Do not re-send: the caller gets this error.
    No(CallError),
}

/// The rule in the [module docs](self).
pub(crate) fn classify(error: CallError, idempotent: bool) -> Retry {
    match error {
        CallError::NotSent(Unsent::Disconnected | Unsent::Closed) | CallError::Connect(_) => {
            Retry::Free
        }
        CallError::Remote(RemoteError::Overloaded) => Retry::Budgeted {
            may_have_run: false,
        },
        CallError::ConnectionLost
        | CallError::Transport(_)
        | CallError::Protocol(_)
        | CallError::Closed
        | CallError::Remote(RemoteError::ShuttingDown) => {
            if idempotent {
                Retry::Budgeted { may_have_run: true }
            } else {
                Retry::No(CallError::NotRetried {
                    reason: NotRetried::NotIdempotent,
                    may_have_run: true,
                })
            }
        }
        other => Retry::No(other),
    }
}

#[cfg(test)]
mod tests {
    use courier::{ConnectError, TransportErrorKind};

    use super::*;

    #[test]
    fn never_sent_failures_are_retried_free_whatever_the_method() {
        for idempotent in [false, true] {
            assert_eq!(
                classify(CallError::NotSent(Unsent::Disconnected), idempotent),
                Retry::Free
            );
            let refused = ConnectError::from_kind(TransportErrorKind::Refused);
            assert_eq!(
                classify(CallError::Connect(refused), idempotent),
                Retry::Free
            );
        }
    }

    #[test]
    fn possibly_sent_failures_are_retried_only_for_idempotent_methods() {
        for error in [
            CallError::ConnectionLost,
            CallError::Transport(TransportErrorKind::TimedOut),
            CallError::Closed,
            CallError::Remote(RemoteError::ShuttingDown),
        ] {
            assert_eq!(
                classify(error, true),
                Retry::Budgeted { may_have_run: true }
            );
            assert_eq!(
                classify(error, false),
                Retry::No(CallError::NotRetried {
                    reason: NotRetried::NotIdempotent,
                    may_have_run: true
                })
            );
        }
    }

    #[test]
    fn answers_and_local_failures_are_never_retried() {
        for error in [
            CallError::DeadlineExceeded,
            CallError::Decode,
            CallError::Encode,
            CallError::Remote(RemoteError::HandlerPanicked),
            CallError::Remote(RemoteError::DeadlineExceeded),
            CallError::NotSent(Unsent::NoEndpoint),
        ] {
            assert_eq!(classify(error, true), Retry::No(error));
        }
        assert_eq!(
            classify(CallError::Remote(RemoteError::Overloaded), false),
            Retry::Budgeted {
                may_have_run: false
            }
        );
    }
}
