//! Deadlines: one re-armable sleep per driver, for the earliest pending
//! deadline, and a [`DeadlineQueue`] that finds that deadline in O(log n).

use alloc::boxed::Box;
use alloc::vec::Vec;
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

/// Deadlines of table slots, earliest first: an indexed binary heap, so
/// setting, moving and removing a slot's deadline cost O(log n) and the
/// earliest one is found in O(1), with no allocation once the table has
/// grown to its peak.
#[derive(Debug, Default)]
pub(crate) struct DeadlineQueue {
    /// `(deadline, slot)`, a min-heap on the deadline.
    heap: Vec<(Duration, u32)>,
    /// `position[slot]`: where the slot sits in `heap`, `ABSENT` if nowhere.
    position: Vec<u32>,
}

const ABSENT: u32 = u32::MAX;

impl DeadlineQueue {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Slots with a deadline.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// The earliest deadline and its slot.
    pub(crate) fn peek(&self) -> Option<(Duration, u32)> {
        self.heap.first().copied()
    }

    /// Sets (or moves) the deadline of `slot`.
    pub(crate) fn set(&mut self, slot: u32, at: Duration) {
        let index = slot as usize;
        if self.position.len() <= index {
            self.position.resize(index + 1, ABSENT);
        }
        match self.position.get(index).copied() {
            Some(ABSENT) | None => {
                let at_end = self.heap.len();
                self.heap.push((at, slot));
                self.place(at_end, slot);
                self.sift_up(at_end);
            }
            Some(pos) => {
                let pos = pos as usize;
                if let Some(entry) = self.heap.get_mut(pos) {
                    entry.0 = at;
                }
                self.sift_up(pos);
                self.sift_down(pos);
            }
        }
    }

    /// Removes the deadline of `slot`, if it has one.
    pub(crate) fn remove(&mut self, slot: u32) {
        let Some(&pos) = self.position.get(slot as usize) else {
            return;
        };
        if pos == ABSENT {
            return;
        }
        let pos = pos as usize;
        let last = self.heap.len() - 1;
        self.heap.swap(pos, last);
        self.heap.pop();
        if let Some(p) = self.position.get_mut(slot as usize) {
            *p = ABSENT;
        }
        if let Some(&(_, moved)) = self.heap.get(pos) {
            self.place(pos, moved);
            self.sift_up(pos);
            self.sift_down(pos);
        }
    }

    /// Removes and returns a slot whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<u32> {
        let (at, slot) = self.peek()?;
        if at > now {
            return None;
        }
        self.remove(slot);
        Some(slot)
    }

    /// Forgets every deadline.
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
        self.position.iter_mut().for_each(|p| *p = ABSENT);
    }

    fn place(&mut self, pos: usize, slot: u32) {
        if let Some(p) = self.position.get_mut(slot as usize) {
            *p = pos as u32;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        let (sa, sb) = (self.heap[a].1, self.heap[b].1);
        self.place(a, sa);
        self.place(b, sb);
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.heap[parent].0 <= self.heap[pos].0 {
                break;
            }
            self.swap(parent, pos);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        loop {
            let left = 2 * pos + 1;
            let right = left + 1;
            let mut least = pos;
            if left < self.heap.len() && self.heap[left].0 < self.heap[least].0 {
                least = left;
            }
            if right < self.heap.len() && self.heap[right].0 < self.heap[least].0 {
                least = right;
            }
            if least == pos {
                return;
            }
            self.swap(pos, least);
            pos = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    /// Random sets, moves and removals pop in the same order as a sorted
    /// reference set.
    #[test]
    fn queue_pops_in_deadline_order_under_churn() {
        let mut queue = DeadlineQueue::new();
        let mut reference: BTreeSet<(Duration, u32)> = BTreeSet::new();
        let mut deadline_of = [None::<Duration>; 64];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let steps = if cfg!(miri) { 500 } else { 20_000 };
        for _ in 0..steps {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 64) as u32;
            let at = Duration::from_millis((x >> 8) % 1000);
            if let Some(old) = deadline_of[slot as usize].take() {
                reference.remove(&(old, slot));
            }
            if x % 5 == 0 {
                queue.remove(slot);
            } else {
                queue.set(slot, at);
                reference.insert((at, slot));
                deadline_of[slot as usize] = Some(at);
            }
            assert_eq!(queue.len(), reference.len());
            assert_eq!(queue.peek().map(|p| p.0), reference.first().map(|p| p.0));
        }
        let now = Duration::from_millis(500);
        while let Some(slot) = queue.pop_due(now) {
            let at = deadline_of[slot as usize].take().unwrap();
            assert!(at <= now);
            assert!(reference.remove(&(at, slot)));
        }
        assert!(reference.iter().all(|&(at, _)| at > now));
        assert_eq!(queue.len(), reference.len());
        queue.clear();
        assert_eq!(queue.peek(), None);
    }

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_to_ms(Duration::from_micros(1)), 1);
        assert_eq!(timeout_to_ms(Duration::from_millis(250)), 250);
        assert_eq!(timeout_to_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
