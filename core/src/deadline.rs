//! One re-armable sleep per driver, for the earliest pending deadline.

use alloc::boxed::Box;
use core::future::Future;
use core::pin::Pin;
use core::task::Context;
use core::time::Duration;

use crate::timer::Timer;

/// Converts a wire timeout to a duration and back (whole milliseconds,
/// rounded up so a call never gets less time than it asked for).
pub(crate) fn timeout_to_ms(timeout: Duration) -> u32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

pub(crate) struct Deadlines<Tm: Timer> {
    timer: Tm,
    sleep: Option<Pin<Box<Tm::Sleep>>>,
    armed: Option<Duration>,
}

impl<Tm: Timer> Deadlines<Tm> {
    pub(crate) fn new(timer: Tm) -> Self {
        Deadlines {
            timer,
            sleep: None,
            armed: None,
        }
    }

    pub(crate) fn now(&self) -> Duration {
        self.timer.now()
    }

    /// Makes sure the driver is woken no later than `at`.
    pub(crate) fn arm(&mut self, at: Duration) {
        if self.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        self.armed = Some(at);
        match &mut self.sleep {
            Some(sleep) => self.timer.reset(sleep.as_mut(), at),
            None => self.sleep = Some(Box::pin(self.timer.sleep_until(at))),
        }
    }

    /// Whether the armed time has come; disarms when it has. The caller
    /// then expires what is due and re-arms for the next deadline.
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.armed.is_none() {
            return false;
        }
        let Some(sleep) = &mut self.sleep else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_ready() {
            self.armed = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_to_ms(Duration::from_micros(1)), 1);
        assert_eq!(timeout_to_ms(Duration::from_millis(250)), 250);
        assert_eq!(timeout_to_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
