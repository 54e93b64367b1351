//! Time without owning a timer: the [`Timer`] trait.
//!
//! The drivers enforce deadlines with one sleep future per connection, made
//! by a [`Timer`] the user passes in: [`AsyncIoTimer`] (feature `async-io`,
//! for smol or any executor), [`TokioTimer`] (feature `tokio`), or their own
//! (an embedded HAL timer, a simulated clock in tests). [`NoTimer`] turns
//! local deadline checks off; timeouts still travel on the wire.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

/// A monotonic clock with sleeps.
///
/// Times are [`Duration`]s since an epoch the timer picks (typically its
/// creation); only differences matter.
pub trait Timer {
    /// A future that completes at a given time (its output is ignored).
    type Sleep: Future;

    /// The current time.
    fn now(&self) -> Duration;

    /// A future that completes at `deadline` (at once if it passed).
    fn sleep_until(&self, deadline: Duration) -> Self::Sleep;

    /// Moves an existing sleep to `deadline`, re-arming it if it fired.
    fn reset(&self, sleep: Pin<&mut Self::Sleep>, deadline: Duration);
}

/// A timer that never fires: deadlines are sent to the peer but not checked
/// locally.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTimer;

/// The sleep of [`NoTimer`]: pending forever.
#[derive(Debug)]
pub struct Never;

impl Future for Never {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Timer for NoTimer {
    type Sleep = Never;
    fn now(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep_until(&self, _: Duration) -> Never {
        Never
    }
    fn reset(&self, _: Pin<&mut Never>, _: Duration) {}
}

impl<T: Timer + ?Sized> Timer for &T {
    type Sleep = T::Sleep;
    fn now(&self) -> Duration {
        (**self).now()
    }
    fn sleep_until(&self, deadline: Duration) -> T::Sleep {
        (**self).sleep_until(deadline)
    }
    fn reset(&self, sleep: Pin<&mut T::Sleep>, deadline: Duration) {
        (**self).reset(sleep, deadline)
    }
}

/// `epoch + deadline`, clamped to about 30 years so that an absurd timeout
/// never overflows `Instant`.
#[cfg(any(feature = "async-io", feature = "tokio"))]
fn instant_at(epoch: std::time::Instant, deadline: Duration) -> std::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    epoch + deadline.min(FAR)
}

#[cfg(feature = "async-io")]
pub use self::async_io_timer::AsyncIoTimer;

#[cfg(feature = "async-io")]
mod async_io_timer {
    use core::pin::Pin;
    use core::time::Duration;
    use std::time::Instant;

    use super::Timer;

    /// A [`Timer`] on `async-io`'s reactor: works under smol and any other
    /// executor.
    #[derive(Clone, Copy, Debug)]
    pub struct AsyncIoTimer {
        epoch: Instant,
    }

    impl AsyncIoTimer {
        /// A timer whose epoch is now.
        pub fn new() -> Self {
            AsyncIoTimer {
                epoch: Instant::now(),
            }
        }
    }

    impl Default for AsyncIoTimer {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Timer for AsyncIoTimer {
        type Sleep = async_io::Timer;
        fn now(&self) -> Duration {
            self.epoch.elapsed()
        }
        fn sleep_until(&self, deadline: Duration) -> async_io::Timer {
            async_io::Timer::at(super::instant_at(self.epoch, deadline))
        }
        fn reset(&self, mut sleep: Pin<&mut async_io::Timer>, deadline: Duration) {
            sleep.set_at(super::instant_at(self.epoch, deadline));
        }
    }
}

#[cfg(feature = "tokio")]
pub use self::tokio_timer::TokioTimer;

#[cfg(feature = "tokio")]
mod tokio_timer {
    use core::pin::Pin;
    use core::time::Duration;

    use super::Timer;

    /// A [`Timer`] on tokio's timer wheel (needs a tokio runtime with time
    /// enabled).
    #[derive(Clone, Copy, Debug)]
    pub struct TokioTimer {
        epoch: tokio::time::Instant,
    }

    impl TokioTimer {
        /// A timer whose epoch is now.
        pub fn new() -> Self {
            TokioTimer {
                epoch: tokio::time::Instant::now(),
            }
        }
    }

    impl Default for TokioTimer {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Timer for TokioTimer {
        type Sleep = tokio::time::Sleep;
        fn now(&self) -> Duration {
            self.epoch.elapsed()
        }
        fn sleep_until(&self, deadline: Duration) -> tokio::time::Sleep {
            tokio::time::sleep_until(super::instant_at(self.epoch.into_std(), deadline).into())
        }
        fn reset(&self, sleep: Pin<&mut tokio::time::Sleep>, deadline: Duration) {
            sleep.reset(super::instant_at(self.epoch.into_std(), deadline).into());
        }
    }
}
