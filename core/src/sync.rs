//! The one lock the drivers share state under.
//!
//! With `std` it is `std::sync::Mutex`. Without `std` it is a
//! [`critical_section::Mutex`]: on a microcontroller a waker may fire from an
//! interrupt handler, and a spin lock that the interrupted code holds would
//! deadlock it; a critical section masks interrupts instead, so the handler
//! runs only after the section ends. The target must provide a
//! `critical-section` implementation (`cortex-m` does with its
//! `critical-section-single-core` feature).
//!
//! The lock is only taken through [`Mutex::with`], so no guard can be held
//! across an `.await`, and sections stay short: no serde, no timer, no
//! waker wake and no drop of a user value runs inside one. The one piece of
//! executor code that may is a waker *clone* where a waker must be kept for
//! several waiters at once (a reference-count increment in every executor
//! we know).

/// A mutex whose critical sections are closures.
pub(crate) struct Mutex<T> {
    #[cfg(feature = "std")]
    inner: std::sync::Mutex<T>,
    #[cfg(not(feature = "std"))]
    inner: critical_section::Mutex<core::cell::RefCell<T>>,
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        Mutex {
            #[cfg(feature = "std")]
            inner: std::sync::Mutex::new(value),
            #[cfg(not(feature = "std"))]
            inner: critical_section::Mutex::new(core::cell::RefCell::new(value)),
        }
    }

    /// Runs `f` with the value locked. Poison is ignored: sections run no
    /// user code and leave the state consistent at every step that can
    /// panic, so a panic elsewhere never leaves it half-updated.
    #[cfg(feature = "std")]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut guard)
    }

    /// Runs `f` inside a critical section. Sections never nest: `f` does
    /// not take this lock again.
    #[cfg(not(feature = "std"))]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        critical_section::with(|cs| f(&mut self.inner.borrow_ref_mut(cs)))
    }
}
