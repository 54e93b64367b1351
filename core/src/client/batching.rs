//! When the driver should let callers queue before it writes.
//!
//! A caller that queues a request into an idle driver wakes it. On an
//! executor that runs a task woken by the running one next (tokio's LIFO
//! slot), the driver then runs before the other callers that its last
//! read handed replies to, takes the one request queued so far and writes
//! it alone: a `write` per call or two at 64 calls in flight, where a
//! FIFO executor (smol) lets them all queue and writes them in one.
//!
//! So the driver counts the replies it handed out and the requests queued
//! since it last took the queue. While more callers were answered than
//! have queued, some are probably about to queue (a caller that gets its
//! reply often makes its next call), and the driver yields once — wakes
//! itself and returns `Pending`, which puts it behind the tasks already
//! woken — then takes whatever is queued. One yield at most per write, so
//! a reply whose caller makes no new call delays the next write by one
//! trip through the run queue, never longer; with one call in flight the
//! counts are equal and the driver never yields.

/// Replies handed out and requests queued since the driver last took the
/// queue (`State::out`).
#[derive(Default)]
pub(crate) struct Batching {
    answered: u32,
    requested: u32,
    /// The driver yielded (or is about to) for this batch.
    waited: bool,
    /// Set when the driver decided to yield; taken by `Shared::settle`.
    yield_due: bool,
}

impl Batching {
    /// A reply was routed to its caller.
    pub(crate) fn answered(&mut self) {
        self.answered = self.answered.saturating_add(1);
    }

    /// A caller queued a request.
    pub(crate) fn requested(&mut self) {
        self.requested = self.requested.saturating_add(1);
    }

    /// Whether the driver should leave the queue for now and yield once,
    /// so that the callers it answered can queue their next requests.
    pub(crate) fn wait_for_callers(&mut self) -> bool {
        if self.waited || self.answered <= self.requested {
            return false;
        }
        self.waited = true;
        self.yield_due = true;
        true
    }

    /// The driver took the queue: a new batch starts.
    pub(crate) fn took(&mut self) {
        *self = Batching::default();
    }

    /// Whether the driver must yield now (once per decision).
    pub(crate) fn take_yield(&mut self) -> bool {
        core::mem::take(&mut self.yield_due)
    }
}

#[cfg(test)]
mod tests {
    use super::Batching;

    #[test]
    fn one_call_in_flight_never_waits() {
        let mut b = Batching::default();
        for _ in 0..3 {
            b.answered();
            b.requested();
            assert!(!b.wait_for_callers());
            assert!(!b.take_yield());
            b.took();
        }
    }

    #[test]
    fn waits_once_while_answered_callers_have_not_queued() {
        let mut b = Batching::default();
        for _ in 0..30 {
            b.answered();
        }
        b.requested();
        assert!(b.wait_for_callers());
        assert!(b.take_yield());
        assert!(!b.take_yield(), "one yield per decision");
        // Still fewer requests than replies: no second wait in this batch.
        b.requested();
        assert!(!b.wait_for_callers());
        b.took();
        assert!(!b.wait_for_callers(), "a new batch starts from zero");
    }

    #[test]
    fn counts_saturate() {
        let mut b = Batching {
            answered: u32::MAX,
            requested: u32::MAX,
            ..Batching::default()
        };
        b.answered();
        b.requested();
        assert!(!b.wait_for_callers());
    }
}
