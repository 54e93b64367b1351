//! A millisecond clock on SysTick, as a courier `Timer`.

use core::cell::RefCell;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use cortex_m::peripheral::syst::SystClkSource;
use critical_section::Mutex;

/// mps2-an386's system clock.
const CORE_HZ: u32 = 25_000_000;

static MILLIS: AtomicU32 = AtomicU32::new(0);

/// Sleepers: the server's deadline sleep and the blink handler's pause.
const SLEEPERS: usize = 2;
/// A sleeper: the millisecond it waits for and its waker.
type Sleeper = Option<(u32, Waker)>;
static WAKERS: Mutex<RefCell<[Sleeper; SLEEPERS]>> =
    Mutex::new(RefCell::new([const { None }; SLEEPERS]));

/// Starts SysTick at 1 kHz.
pub fn start(mut syst: cortex_m::peripheral::SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Milliseconds since start.
pub fn millis() -> u32 {
    MILLIS.load(Ordering::Relaxed)
}

/// Called from the SysTick exception: one millisecond passed.
pub fn on_tick() {
    let now = MILLIS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    let mut due: [Option<Waker>; SLEEPERS] = [const { None }; SLEEPERS];
    critical_section::with(|cs| {
        for (slot, out) in WAKERS.borrow_ref_mut(cs).iter_mut().zip(due.iter_mut()) {
            if matches!(slot, Some((at, _)) if *at <= now) {
                *out = slot.take().map(|(_, w)| w);
            }
        }
    });
    for waker in due.into_iter().flatten() {
        waker.wake();
    }
}

/// The clock as a courier timer.
#[derive(Clone, Copy)]
pub struct Clock;

/// A sleep until a millisecond; `slot` picks its place among the sleepers.
pub struct Sleep {
    at: u32,
    slot: usize,
}

impl Sleep {
    pub fn until(at: u32, slot: usize) -> Self {
        Sleep { at, slot }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if millis() >= self.at {
            return Poll::Ready(());
        }
        critical_section::with(|cs| {
            if let Some(slot) = WAKERS.borrow_ref_mut(cs).get_mut(self.slot) {
                *slot = Some((self.at, cx.waker().clone()));
            }
        });
        // A tick between the check and the registration was not missed:
        // look again.
        if millis() >= self.at {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

fn to_millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl courier::Timer for Clock {
    type Sleep = Sleep;
    fn now(&self) -> Duration {
        Duration::from_millis(u64::from(millis()))
    }
    fn sleep_until(&self, deadline: Duration) -> Sleep {
        Sleep::until(to_millis(deadline), 0)
    }
    fn reset(&self, sleep: Pin<&mut Sleep>, deadline: Duration) {
        sleep.get_mut().at = to_millis(deadline);
    }
}
