//! A test service shared by the integration tests, with probes that let a
//! test see what the server side did.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};

/// An application error, returned as a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
pub enum DivError {
    /// Division by zero.
    ByZero,
}

/// The service under test.
#[courier::service]
pub trait Test {
    /// Returns its argument.
    async fn echo(&self, x: u64) -> u64;
    /// Adds.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns the bytes it got.
    async fn bytes(&self, data: Vec<u8>) -> Vec<u8>;
    /// Yields `yields` times, then returns `id`.
    async fn delayed(&self, id: u64, yields: u32) -> u64;
    /// Never returns.
    async fn hang(&self, tag: u64);
    /// Divides, with an application error.
    async fn div(&self, a: u64, b: u64) -> Result<u64, DivError>;
    /// Panics.
    async fn explode(&self);
}

/// Counters the handlers update.
#[derive(Default)]
pub struct Probe {
    /// Handlers of `hang` that started.
    pub hangs_started: AtomicUsize,
    /// Handlers of `hang` that were dropped before finishing.
    pub hangs_dropped: AtomicUsize,
    /// `delayed` handlers running right now, and the most seen at once.
    pub delayed_active: AtomicUsize,
    pub delayed_max: AtomicUsize,
}

impl Probe {
    pub fn started(&self) -> usize {
        self.hangs_started.load(Ordering::SeqCst)
    }
    pub fn dropped(&self) -> usize {
        self.hangs_dropped.load(Ordering::SeqCst)
    }
}

/// The implementation.
#[derive(Clone, Default)]
pub struct Impl {
    pub probe: Arc<Probe>,
}

struct DropGuard(Arc<Probe>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.hangs_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

struct ActiveGuard(Arc<Probe>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.delayed_active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Test for Impl {
    async fn echo(&self, x: u64) -> u64 {
        x
    }
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn bytes(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn delayed(&self, id: u64, yields: u32) -> u64 {
        let active = self.probe.delayed_active.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.delayed_max.fetch_max(active, Ordering::SeqCst);
        let _active = ActiveGuard(self.probe.clone());
        for _ in 0..yields {
            YieldNow(false).await;
        }
        id
    }
    async fn hang(&self, _tag: u64) {
        self.probe.hangs_started.fetch_add(1, Ordering::SeqCst);
        let _guard = DropGuard(self.probe.clone());
        std::future::pending::<()>().await;
    }
    async fn div(&self, a: u64, b: u64) -> Result<u64, DivError> {
        a.checked_div(b).ok_or(DivError::ByZero)
    }
    async fn explode(&self) {
        panic!("handler exploded on purpose");
    }
}

/// Returns `Pending` once, waking itself.
pub struct YieldNow(pub bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Polls `f` until `cond` holds, yielding between polls; gives up after
/// `max_yields` rounds so a broken test fails instead of hanging.
pub async fn wait_until(mut cond: impl FnMut() -> bool, max_yields: usize) {
    for _ in 0..max_yields {
        if cond() {
            return;
        }
        YieldNow(false).await;
    }
    panic!("condition not reached after {max_yields} yields");
}
