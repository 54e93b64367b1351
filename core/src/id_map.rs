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
    /// `(slot + 1) << 32 | id`, or [`EMPTY`]. Packing a cell into one word
    /// keeps a probe to one load and one compare.
    cells: Vec<u64>,
    mask: usize,
    /// `32 - log2(cells.len())`: the hash keeps the top bits of the product.
    shift: u32,
    len: usize,
}

const EMPTY: u64 = 0;

fn pack(id: u32, slot: u32) -> u64 {
    ((u64::from(slot) + 1) << 32) | u64::from(id)
}

fn id_of(cell: u64) -> u32 {
    cell as u32
}

fn slot_of(cell: u64) -> u32 {
    ((cell >> 32) as u32).wrapping_sub(1)
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
        // Fibonacci hashing: the top bits of the product spread sequential
        // ids evenly (the low bits would put every ninth id next to each
        // other and build long probe runs).
        (id.wrapping_mul(0x9e37_79b9)
            .checked_shr(self.shift)
            .unwrap_or(0) as usize)
            & self.mask
    }

    /// Adds `id → slot` (an equal id already present stays too). Slots are
    /// table indices, below `u32::MAX`.
    pub(crate) fn insert(&mut self, id: u32, slot: u32) {
        if (self.len + 1).saturating_mul(2) > self.cells.len() {
            self.grow();
        }
        let mut at = self.home(id);
        loop {
            match self.cells.get_mut(at) {
                Some(cell) if *cell == EMPTY => {
                    *cell = pack(id, slot);
                    self.len += 1;
                    return;
                }
                Some(_) => at = (at + 1) & self.mask,
                None => return,
            }
        }
    }

    /// The slot of some entry for `id`.
    pub(crate) fn get(&self, id: u32) -> Option<u32> {
        self.find(id, |_| true).map(|(_, slot)| slot)
    }

    /// Whether `id → slot` is present.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: u32, slot: u32) -> bool {
        self.find(id, |s| s == slot).is_some()
    }

    /// Removes the entry `id → slot`; returns whether it was there.
    pub(crate) fn remove(&mut self, id: u32, slot: u32) -> bool {
        match self.find(id, |s| s == slot) {
            Some((at, _)) => {
                self.remove_at(at);
                true
            }
            None => false,
        }
    }

    /// The cell of an entry for `id` whose slot passes `accept`.
    fn find(&self, id: u32, accept: impl Fn(u32) -> bool) -> Option<(usize, u32)> {
        if self.len == 0 {
            return None;
        }
        let mut at = self.home(id);
        loop {
            let cell = *self.cells.get(at)?;
            if cell == EMPTY {
                return None;
            }
            if id_of(cell) == id && accept(slot_of(cell)) {
                return Some((at, slot_of(cell)));
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Empties cell `hole` and shifts later cells of its probe run back, so
    /// lookups never need tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.mask;
        let mut at = (hole + 1) & mask;
        loop {
            let cell = self.cells.get(at).copied().unwrap_or(EMPTY);
            if cell == EMPTY {
                break;
            }
            // The entry may move into the hole if the hole lies on its probe
            // path, i.e. cyclically within [home, at).
            let home = self.home(id_of(cell));
            if hole.wrapping_sub(home) & mask < at.wrapping_sub(home) & mask {
                self.cells.swap(hole, at);
                hole = at;
            }
            at = (at + 1) & mask;
        }
        if let Some(cell) = self.cells.get_mut(hole) {
            *cell = EMPTY;
            self.len -= 1;
        }
    }

    fn grow(&mut self) {
        let size = self.cells.len().saturating_mul(2).max(16);
        let old = core::mem::replace(&mut self.cells, vec![EMPTY; size]);
        self.mask = size - 1;
        self.shift = 32u32.saturating_sub(size.trailing_zeros());
        self.len = 0;
        for cell in old.into_iter().filter(|&c| c != EMPTY) {
            self.insert(id_of(cell), slot_of(cell));
        }
    }

    /// Removes every entry, keeping the table.
    pub(crate) fn clear(&mut self) {
        self.cells.iter_mut().for_each(|cell| *cell = EMPTY);
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
        let steps = if cfg!(miri) { 500 } else { 20_000u32 };
        for step in 0..steps {
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
