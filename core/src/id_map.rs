//! Request id → table slot, in O(1) without allocating per call.
//!
//! Both drivers look calls up by the request id a frame carries: the client
//! routes replies, the server routes cancels. Ids are chosen by the caller,
//! so the server may see the same id twice in flight; the map therefore
//! keeps duplicates (a multimap), and removal names the exact pair.
//!
//! Open addressing with linear probing and backward-shift deletion; the
//! table is at most half full and grows by doubling, so its memory follows
//! the peak number of calls in flight.

use alloc::vec;
use alloc::vec::Vec;

/// A multimap from request id to slot index.
#[derive(Debug, Default)]
pub(crate) struct IdMap {
    cells: Vec<Option<(u32, u32)>>,
    len: usize,
}

impl IdMap {
    pub(crate) fn new() -> Self {
        IdMap::default()
    }

    /// Entries in the map.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn home(&self, id: u32) -> usize {
        // Fibonacci hashing spreads sequential ids over the table.
        let mask = self.cells.len() - 1;
        (id.wrapping_mul(0x9e37_79b9) as usize) & mask
    }

    /// Adds `id → slot` (an equal id already present stays too).
    pub(crate) fn insert(&mut self, id: u32, slot: u32) {
        if (self.len + 1).saturating_mul(2) > self.cells.len() {
            self.grow();
        }
        let mask = self.cells.len() - 1;
        let mut at = self.home(id);
        while self.cells.get(at).is_some_and(Option::is_some) {
            at = (at + 1) & mask;
        }
        if let Some(cell) = self.cells.get_mut(at) {
            *cell = Some((id, slot));
            self.len += 1;
        }
    }

    /// The slot of some entry for `id`.
    pub(crate) fn get(&self, id: u32) -> Option<u32> {
        self.position(id, |_| true).map(|(_, slot)| slot)
    }

    /// Whether `id → slot` is present.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32, slot: u32) -> bool {
        self.position(id, |s| s == slot).is_some()
    }

    /// Removes the entry `id → slot`; returns whether it was there.
    pub(crate) fn remove(&mut self, id: u32, slot: u32) -> bool {
        match self.position(id, |s| s == slot) {
            Some((at, _)) => {
                self.remove_at(at);
                true
            }
            None => false,
        }
    }

    /// Finds the cell of an entry for `id` whose slot passes `accept`.
    fn position(&self, id: u32, accept: impl Fn(u32) -> bool) -> Option<(usize, u32)> {
        if self.len == 0 {
            return None;
        }
        let mask = self.cells.len() - 1;
        let mut at = self.home(id);
        while let Some(Some((key, slot))) = self.cells.get(at) {
            if *key == id && accept(*slot) {
                return Some((at, *slot));
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// Empties cell `at` and shifts later cells of the probe run back, so
    /// lookups never need tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.cells.len() - 1;
        if let Some(cell) = self.cells.get_mut(hole) {
            *cell = None;
            self.len -= 1;
        }
        let mut at = (hole + 1) & mask;
        while let Some(&Some((id, _))) = self.cells.get(at) {
            let home = self.home(id);
            // The entry may move into the hole if the hole lies on its probe
            // path, i.e. cyclically within [home, at).
            let distance_to_hole = hole.wrapping_sub(home) & mask;
            let distance_to_here = at.wrapping_sub(home) & mask;
            if distance_to_hole < distance_to_here {
                self.cells.swap(hole, at);
                hole = at;
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = self.cells.len().saturating_mul(2).max(16);
        let old = core::mem::replace(&mut self.cells, vec![None; size]);
        self.len = 0;
        for (id, slot) in old.into_iter().flatten() {
            self.insert(id, slot);
        }
    }

    /// Removes every entry, keeping the table.
    pub(crate) fn clear(&mut self) {
        self.cells.iter_mut().for_each(|cell| *cell = None);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[test]
    fn inserts_finds_and_removes_pairs() {
        let mut map = IdMap::new();
        assert_eq!(map.get(7), None);
        map.insert(7, 1);
        map.insert(7, 2);
        map.insert(8, 3);
        assert_eq!(map.len(), 3);
        assert!(map.contains(7, 1) && map.contains(7, 2));
        assert!(map.remove(7, 2));
        assert!(!map.remove(7, 2));
        assert_eq!(map.get(7), Some(1));
        assert!(map.remove(7, 1));
        assert_eq!(map.get(7), None);
        assert_eq!(map.get(8), Some(3));
    }

    /// Random inserts and removals agree with a reference map, including
    /// colliding ids (multiples of the table size) and ids near `u32::MAX`.
    #[test]
    fn agrees_with_a_reference_under_churn() {
        let mut map = IdMap::new();
        let mut reference: BTreeMap<(u32, u32), ()> = BTreeMap::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = match x % 4 {
                0 => (x >> 8) as u32 % 64,
                1 => ((x >> 8) as u32 % 8) * 1024,
                2 => u32::MAX - (x >> 8) as u32 % 8,
                _ => (x >> 8) as u32,
            };
            if x % 3 == 0 && !reference.is_empty() {
                let nth = (x >> 20) as usize % reference.len();
                let &(id, slot) = reference.keys().nth(nth).unwrap();
                assert!(map.remove(id, slot));
                reference.remove(&(id, slot));
            } else {
                map.insert(id, step);
                reference.insert((id, step), ());
            }
            assert_eq!(map.len(), reference.len());
        }
        for &(id, slot) in reference.keys() {
            assert!(map.contains(id, slot));
        }
        map.clear();
        assert_eq!(map.get(0), None);
    }
}
