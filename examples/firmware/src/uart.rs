//! UART0 of mps2-an386, a CMSDK APB UART, as a courier `Transport`.
//!
//! One byte of buffer per direction. A read that finds no byte enables
//! the RX interrupt and parks the waker; the interrupt (IRQ 0) disables
//! itself and wakes the task, so an idle device sleeps in WFI. Writes wait
//! the same way on the TX interrupt (IRQ 1) when the TX buffer is full.

use core::cell::RefCell;
use core::ptr;
use core::task::{Context, Poll, Waker};

use courier::{Transport, TransportError, TransportErrorKind};
use critical_section::Mutex;

const BASE: usize = 0x4000_4000;
const DATA: *mut u32 = BASE as *mut u32;
const STATE: *mut u32 = (BASE + 0x4) as *mut u32;
const CTRL: *mut u32 = (BASE + 0x8) as *mut u32;
const INTSTATUS: *mut u32 = (BASE + 0xc) as *mut u32;
const BAUDDIV: *mut u32 = (BASE + 0x10) as *mut u32;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_TX_INT: u32 = 1 << 2;
const CTRL_RX_INT: u32 = 1 << 3;
const INT_TX: u32 = 1 << 0;
const INT_RX: u32 = 1 << 1;

/// The IRQ numbers of UART0 on mps2-an386.
pub const RX_IRQ: i16 = 0;
pub const TX_IRQ: i16 = 1;

static RX_WAKER: Mutex<RefCell<Option<Waker>>> = Mutex::new(RefCell::new(None));
static TX_WAKER: Mutex<RefCell<Option<Waker>>> = Mutex::new(RefCell::new(None));

fn read(reg: *mut u32) -> u32 {
    // SAFETY: `reg` is one of UART0's registers, always mapped on this
    // board; volatile because the device changes them.
    unsafe { ptr::read_volatile(reg) }
}

fn write(reg: *mut u32, value: u32) {
    // SAFETY: as in `read`; writing these registers has no effect on
    // memory the program owns.
    unsafe { ptr::write_volatile(reg, value) }
}

/// UART0, enabled in both directions.
pub struct Uart0(());

impl Uart0 {
    /// Enables UART0 and its two interrupt lines in the NVIC. Call once.
    pub fn take() -> Self {
        write(BAUDDIV, 16);
        write(CTRL, CTRL_TX_EN | CTRL_RX_EN);
        for irq in [RX_IRQ, TX_IRQ] {
            // SAFETY: unmasking only lets `on_interrupt` run, which touches
            // nothing but the wakers (under a critical section) and UART0.
            unsafe { cortex_m::peripheral::NVIC::unmask(Irq(irq as u16)) };
        }
        Uart0(())
    }

    /// Drops every received byte until none arrives for `quiet_polls`
    /// checks in a row (the firmware's resynchronisation after garbage).
    #[cfg_attr(feature = "cobs", allow(dead_code))]
    pub fn discard_until_quiet(&mut self, quiet_polls: u32) {
        let mut quiet = 0;
        while quiet < quiet_polls {
            if read(STATE) & STATE_RX_FULL != 0 {
                let _ = read(DATA);
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
    }
}

/// Called by the interrupt handler for IRQ 0 and 1: masks the source and
/// wakes the task waiting for it.
pub fn on_interrupt(irq: i16) {
    let (int, waker) = match irq {
        RX_IRQ => (INT_RX, &RX_WAKER),
        TX_IRQ => (INT_TX, &TX_WAKER),
        _ => return,
    };
    write(INTSTATUS, int);
    let enable = if irq == RX_IRQ {
        CTRL_RX_INT
    } else {
        CTRL_TX_INT
    };
    write(CTRL, read(CTRL) & !enable);
    if let Some(w) = critical_section::with(|cs| waker.borrow_ref_mut(cs).take()) {
        w.wake();
    }
}

/// Parks `cx`'s waker, then enables the interrupt. The caller checks the
/// state again afterwards: a byte that came in between is not missed.
fn arm(waker: &Mutex<RefCell<Option<Waker>>>, enable: u32, cx: &Context<'_>) {
    critical_section::with(|cs| {
        let mut slot = waker.borrow_ref_mut(cs);
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    });
    write(CTRL, read(CTRL) | enable);
}

/// The UART never fails.
#[derive(Debug)]
pub enum Never {}

impl core::fmt::Display for Never {
    fn fmt(&self, _: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {}
    }
}

impl TransportError for Never {
    fn kind(&self) -> TransportErrorKind {
        match *self {}
    }
}

impl Transport for Uart0 {
    type Error = Never;

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, Never>> {
        let mut n = 0;
        for _ in 0..2 {
            while n < buf.len() && read(STATE) & STATE_RX_FULL != 0 {
                buf[n] = read(DATA) as u8;
                n += 1;
            }
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
            // Nothing yet: wake on the RX interrupt, then look once more.
            arm(&RX_WAKER, CTRL_RX_INT, cx);
        }
        Poll::Pending
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, Never>> {
        let mut n = 0;
        for _ in 0..2 {
            while n < buf.len() && read(STATE) & STATE_TX_FULL == 0 {
                write(DATA, u32::from(buf[n]));
                n += 1;
            }
            if n > 0 || buf.is_empty() {
                return Poll::Ready(Ok(n));
            }
            arm(&TX_WAKER, CTRL_TX_INT, cx);
        }
        Poll::Pending
    }

    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Never>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Never>> {
        Poll::Ready(Ok(()))
    }
}

/// An interrupt number for the NVIC.
#[derive(Clone, Copy)]
struct Irq(u16);

// SAFETY: `Irq` holds a valid external interrupt number of this board.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}
