//! The one lock the drivers share state under: `std::sync::Mutex` with `std`,
//! a spin lock without. Critical sections are short and never span an await.

#[cfg(feature = "std")]
#[derive(Default)]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

#[cfg(feature = "std")]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }

    /// Locks, ignoring poison: state is only mutated in short, panic-free
    /// sections, so a panic elsewhere never leaves it half-updated.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(not(feature = "std"))]
#[derive(Default)]
pub(crate) struct Mutex<T>(spin::Mutex<T>);

#[cfg(not(feature = "std"))]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(spin::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> spin::MutexGuard<'_, T> {
        self.0.lock()
    }
}
